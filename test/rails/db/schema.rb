ActiveRecord::Schema.define(version: 1) do
  create_table :notes, if_not_exists: true do |t|
    t.string :body, null: false
    t.timestamps
  end
  create_table :page_views, if_not_exists: true do |t|
    t.string :path
    t.timestamps
  end
  create_table :users, if_not_exists: true do |t|
    t.string :email, null: false, default: ""
    t.string :encrypted_password, null: false, default: ""
    t.timestamps
  end
  add_index :users, :email, unique: true, if_not_exists: true
end
